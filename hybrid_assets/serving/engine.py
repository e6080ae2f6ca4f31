"""The answer engine: retrieve (tenant-scoped) -> prompt -> base + promoted adapter -> constrained JSON.

Knowledge updates are visible on the next request (every request queries Weaviate). A newly promoted
adapter is picked up without a restart: each request reads the registry's pointer (one small file)
and, when it changed, loads the new adapter next to the old one and switches (hot swap).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from hybrid_assets.behaviour.calibration import decision_rule_of
from hybrid_assets.behaviour.registry import AdapterRegistry, read_lineage
from hybrid_assets.behaviour.release import install_release
from hybrid_assets.knowledge.pipeline import account_record, document_texts
from hybrid_assets.models.attribution import attribute
from hybrid_assets.models.base_model import load_for_inference
from hybrid_assets.models.decision import DecisionRule
from hybrid_assets.models.figures import check_figures, label_names, still_grounded, without_sentences_holding
from hybrid_assets.models.generation import Decoder, Generation
from hybrid_assets.policy import EscalationPolicy, Facts
from hybrid_assets.prompting import build_messages, sign_off
from hybrid_assets.schema import ANSWER, CLARIFY, LabelSpace, dump_answer, not_answerable_answer, parse_answer
from hybrid_assets.scoring import decisions_of
from hybrid_assets.serving.clarity import unresolved_reference
from hybrid_assets.serving.retrieval import Retrieved, retrieve
from hybrid_assets.settings import Settings, apply_offline_env
from hybrid_assets.store.collections import knowledge_collection_name


@dataclass(frozen=True)
class Prepared:
    """A request ready to generate: what was retrieved for it and the conversation the model reads."""
    retrieved: Retrieved
    conversation: list[dict]
    given: tuple[str, ...] = ()  # what the request says itself (ticket, earlier turns): figures it may repeat
    # What the escalation policy reads besides the answer: the customer's words (ticket and earlier
    # customer turns), their account record as stored (None without a customer or without retrieval)
    # and the request's date (None: today).
    customer_text: str = ""
    account: dict | None = None
    documents: dict = field(default_factory=dict)  # short id -> its whole document's text (shared hits)
    as_of: date | None = None
    # A decision taken before generation, which the model then writes: "clarify" for a first message
    # that refers to something it never names (``serving/clarity.py``); None: the model decides.
    decision: str | None = None


@dataclass
class AnswerResult:
    answer: dict
    sources: list[dict]  # the cited chunks: short id, chunk id, document, section
    adapter_version: str | None
    collection: str
    retrieval_ms: float
    generation_ms: float
    generated_tokens: int
    dropped_citations: list[str] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)  # post-generation safety rules that fired
    retrieved: list[dict] = field(default_factory=list)  # every retrieved chunk (id, doc, chunk id)
    # What the model decided (``scoring.decisions_of`` of the served answer; of a cut answer, what its
    # prefix had decided): what the evaluation scores.
    decided: dict = field(default_factory=dict)
    complete: bool = True  # False when the token budget cut the answer
    prompt_tokens: int = 0
    text: str = ""  # what the model generated (before the grounding checks)
    # The decision gate's distribution over the decision values (``Generation.decision_probabilities``:
    # the one the rule chose by) and the best retrieved passage's similarity: what a decision is read from.
    decision_probabilities: dict | None = None
    top_similarity: float | None = None
    queue_ms: float | None = None  # time waiting for a batch (set by the API's scheduler)

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "sources": self.sources,
            "adapter_version": self.adapter_version,
            "collection": self.collection,
            "timing_ms": {"retrieval": round(self.retrieval_ms, 1), "generation": round(self.generation_ms, 1),
                          **({"queue": round(self.queue_ms, 1)} if self.queue_ms is not None else {})},
            "generated_tokens": self.generated_tokens,
            "dropped_citations": self.dropped_citations,
            "guards": self.guards,
            "retrieved": self.retrieved,
        }


CITATIONS_ATTRIBUTED = "citations_attributed_to_the_reply"


def enforce_grounding(answer: dict, passages: Mapping[str, str], labels: LabelSpace, given: Iterable[str] = (),
                      account_ids: Collection[str] = ()) -> tuple[dict, list[str], list[str]]:
    """Pure post-checks (``schema.grounding_problem``) of an answer given the retrieved ``passages``
    (short id -> text; ``account_ids``: those from the customer's own tenant) and what the request
    itself says (``given``: ticket, earlier turns):
    unknown citation ids are dropped (and reported); a clarifying question or a "not answerable" cites
    nothing; an answer that cites nothing is not grounded, so it becomes the honest not-answerable
    answer. An answer cites the retrieved passages its reply and resolution draw on
    (``models/attribution.py``), not whichever ids the model wrote. A figure in the reply or
    resolution that neither a cited passage nor the request holds (``models/figures.py``) is cited
    from the retrieved passage that holds it, or, when none does, is
    an invented fact: its sentence is dropped when the rest of the answer still says what its cited
    passages say, else the answer becomes the honest one, keeping its labels."""
    answer = dict(answer)
    dropped = [c for c in answer["citations"] if c not in passages]
    citations = list(dict.fromkeys(c for c in answer["citations"] if c in passages))
    guards = []
    if dropped:
        guards.append("dropped_unknown_citations")
    if answer["decision"] != ANSWER and citations:
        citations = []
        guards.append(f"cleared_citations_of_{answer['decision']}")
    if answer["decision"] == ANSWER and not citations:
        answer = not_answerable_answer(labels, sentiment=answer["sentiment"], category=answer["category"],
                                       escalation=answer["escalation"])
        guards.append("ungrounded_answer_replaced")
    else:
        if answer["decision"] == ANSWER:  # cite the passages the reply's words come from (models/attribution.py)
            attributed = attribute([answer["reply"], answer["resolution"]], passages, citations,
                                   [sign_off(labels.company)])
            if attributed != citations:
                citations = attributed
                guards.append(CITATIONS_ATTRIBUTED)

        def where_figures_come_from(checked: dict):
            return check_figures([checked["reply"], checked["resolution"]], {c: passages[c] for c in citations},
                                 passages, given, label_names(labels), account_ids)

        figures = where_figures_come_from(answer)
        if figures.unsupported:
            trimmed = _without_invented_figures(answer, figures.unsupported, [passages[c] for c in citations],
                                                [*given, sign_off(labels.company)])
            if trimmed is not None:
                answer = trimmed
                guards.append("unsupported_figure_sentence_dropped")
                figures = where_figures_come_from(answer)  # what is left may still need a passage cited
            else:
                answer = not_answerable_answer(labels, sentiment=answer["sentiment"], category=answer["category"],
                                               escalation=answer["escalation"])
                citations = []
                guards.append("unsupported_figure_replaced")
        if answer["decision"] == ANSWER and figures.cite_also:
            citations += figures.cite_also
            guards.append("cited_the_passage_holding_a_figure")
    answer["citations"] = citations
    return answer, dropped, guards


def _without_invented_figures(answer: dict, unsupported, cited_texts: list[str], ignore: list[str]) -> dict | None:
    """The answer less the reply / resolution sentences holding an ``unsupported`` figure, when it is an
    answer and what is left still states something its cited passages say (``figures.still_grounded``);
    None when the honest "not answerable" answer must replace it."""
    if answer["decision"] != ANSWER:
        return None  # a clarifying question with an invented figure is not worth trimming
    reply = without_sentences_holding(answer["reply"], unsupported)
    resolution = without_sentences_holding(answer["resolution"], unsupported)
    if not resolution or not still_grounded(reply, cited_texts, ignore=ignore):
        return None
    return {**answer, "reply": reply, "resolution": resolution}


def truncated_answer(decided: dict, labels: LabelSpace) -> dict:
    """A cut answer cannot be checked, so it becomes the not-answerable answer; what it had already
    decided (sentiment, category, escalation level) stays, so the labels a reader sees, and a scorer
    counts, are the model's own."""
    level = decided.get("escalation_level")
    return not_answerable_answer(
        labels, sentiment=decided.get("sentiment"), category=decided.get("category"),
        escalation={"level": level, "reason": ""} if level else None,
        reason="Generation hit the token limit before the answer was complete.",
        resolution="A person should read this ticket; the assistant could not produce a checked answer.")


class AnswerEngine:
    """Thread-safe; one generation (one batch) at a time. Concurrent API requests are batched by
    ``serving/batcher.py`` before they get here."""
    def __init__(self, settings: Settings, labels: LabelSpace, k: int = 4, max_new_tokens: int = 512,
                 use_adapter: bool = True, adapter_dir: Path | None = None,
                 decision_rule: DecisionRule | None = None):
        self.settings = settings
        self.labels = labels
        self.k = k
        self.max_new_tokens = max_new_tokens
        self.use_adapter = use_adapter
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None  # pin one adapter (evaluation)
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self._decoder = None
        self._adapter_version: str | None = None
        self._decision = DecisionRule()  # the active adapter's calibrated decisions (threshold, probes)
        # A rule that replaces every adapter's own (None: the adapter's lineage decides): what checking a
        # calibration as served decodes with (``evaluation/served_check.py``).
        self.decision_rule = decision_rule
        self.policy = load_policy(settings, labels)

    # -- model and adapter ------------------------------------------------------------------
    def _ensure_base(self) -> None:
        if self._model is not None:
            return
        apply_offline_env()

        # Once per engine: the shipped release adapter's copy in the registry takes a recalibrated shipped
        # lineage (same weights only), so an existing installation serves the decision rule shipped now.
        install_release(self.settings, promote_if_none=False)
        self._model, self._tokenizer = load_for_inference(self.settings.base_model, self.settings)
        self._decoder = Decoder(self._tokenizer, self._model.config.vocab_size, self.labels, self.max_new_tokens,
                                no_repeat_ngram=self.settings.answer_no_repeat_ngram)

    def _sync_adapter(self) -> None:
        """Hot swap: load the promoted adapter if it changed since the last request."""
        if not self.use_adapter:
            version, path = None, None
        elif self.adapter_dir is not None:
            version, path = self.adapter_dir.name, self.adapter_dir
        else:
            # Nothing promoted yet (a fresh machine): the shipped release adapter is installed and promoted.
            current = AdapterRegistry(self.settings.adapters_dir).current() or install_release(self.settings)
            version, path = (current.version_id, current.path) if current else (None, None)
        if version == self._adapter_version:
            return
        self._decision = self.decision_rule or (decision_rule_of(path, read_lineage(path), version)
                                                if path is not None else DecisionRule())
        if version is None:
            pass  # generate() disables any loaded adapter (LoRA layers stay injected but inactive)
        else:
            from peft import PeftModel

            if isinstance(self._model, PeftModel):
                if version not in self._model.peft_config:
                    self._model.load_adapter(str(path), adapter_name=version)
                self._model.set_adapter(version)
            else:
                self._model = PeftModel.from_pretrained(self._model, str(path), adapter_name=version)
            self._model.eval()
        self._adapter_version = version

    @property
    def adapter_version(self) -> str | None:
        return self._adapter_version

    def loaded(self):
        """(model, decoder) with the base model loaded and the promoted adapter active: for callers that
        measure the decoding path itself (benchmarks/serve.py), never a second decoding loop."""
        with self._lock:
            self._ensure_base()
            self._sync_adapter()
        return self._model, self._decoder

    # -- answering ---------------------------------------------------------------------------
    def generate(self, conversations: list[list[dict]], citable: list[tuple[str, ...]],
                 stop: Callable[[], bool] | None = None,
                 similarities: list[float | None] | None = None,
                 decisions: list[str | None] | None = None) -> list[Generation]:
        """One batch through the shared decoding path (``models/generation.py``), with the promoted
        adapter, or the base model when none is promoted. ``similarities``: each row's best retrieved
        passage's similarity to its ticket (what the adapter's retrieval evidence reads); ``decisions``:
        each row's decision taken before generation (None: the model's)."""
        return self._decoder.generate(self._model, conversations, citable, base_only=self._adapter_version is None,
                                      rule=self._decision, stop=stop, similarities=similarities, decisions=decisions)

    @property
    def answer_threshold(self) -> float | None:
        return self._decision.answer_threshold

    def answer(self, client, ticket: str, customer_id: str | None = None, history: list[dict] | None = None,
               retrieval: bool = True) -> AnswerResult:
        return self.answer_many(client, [{"ticket": ticket, "customer_id": customer_id, "history": history}],
                                retrieval=retrieval)[0]

    def answer_many(self, client, requests: list[dict], retrieval: bool = True, batch_size: int = 8,
                    contexts: list[Retrieved] | None = None) -> list[AnswerResult]:
        """Answer several tickets (``{ticket, customer_id?, history?}``), generating in batches.

        ``contexts`` replaces retrieval with given passages (evaluation on another corpus);
        ``retrieval=False`` answers with no context at all (the no-retrieval baselines)."""
        for request in requests:
            if not request.get("ticket") or not request["ticket"].strip():
                raise ValueError("ticket text is empty")
        if contexts is not None and len(contexts) != len(requests):
            raise ValueError("contexts must have one entry per request")
        prepared = [self.prepare(client, r, retrieval, contexts[i] if contexts is not None else None)
                    for i, r in enumerate(requests)]
        results: list[AnswerResult] = []
        with self._lock:  # one adapter version for the whole call
            self._ensure_base()
            self._sync_adapter()
            for start in range(0, len(prepared), batch_size):
                results.extend(self._generate_batch(prepared[start:start + batch_size]))
        return results

    def prepare(self, client, request: dict, retrieval: bool = True, context: Retrieved | None = None) -> Prepared:
        """Retrieval and prompt for one request (``{ticket, customer_id?, history?, as_of?}``; ``as_of``: the
        ticket's date, default today), and what the escalation policy and the clarity rule read (the
        account record, the retrieved passages' whole documents): no model, no lock, so the API runs it
        in the request's own thread before the request joins a batch."""
        if not request.get("ticket") or not request["ticket"].strip():
            raise ValueError("ticket text is empty")
        live = context is None and retrieval  # the live knowledge, not a given corpus or none at all
        if context is None:
            context = (retrieve(client, self.settings, request["ticket"], request.get("customer_id"), self.k)
                       if retrieval else Retrieved([], {}, 0.0))
        conversation = build_messages(request["ticket"], context.passages, self.labels, request.get("customer_id"),
                                      request.get("history"))
        given = (request["ticket"], request.get("customer_id") or "",
                 *(turn["content"] for turn in request.get("history") or ()))
        customer_text = "\n".join([*(turn["content"] for turn in request.get("history") or ()
                                      if turn.get("role") == "user"), request["ticket"]])
        # The account record and the retrieved passages' whole documents are knowledge: read with retrieval.
        account = account_record(client, self.settings, request["customer_id"]) \
            if self.policy is not None and live and request.get("customer_id") else None
        documents = {}
        if self.policy is not None and live:
            shared = {short_id: hit.doc_id for short_id, hit in context.hits.items() if not hit.tenant}
            texts = document_texts(client, self.settings, shared.values()) if shared else {}
            documents = {short_id: texts[doc_id] for short_id, doc_id in shared.items() if doc_id in texts}
        decision = CLARIFY if unresolved_reference(request["ticket"], request.get("history")) else None
        return Prepared(context, conversation, given, customer_text, account, documents, request.get("as_of"), decision)

    def answer_prepared(self, prepared: list[Prepared], stop: Callable[[], bool] | None = None) -> list[AnswerResult]:
        """One batch of prepared requests, each with its own grammar (its citable ids) and its own result:
        what the API's scheduler (``serving/batcher.py``) calls. ``stop`` ends the batch early
        (``Decoder.generate``)."""
        with self._lock:
            self._ensure_base()
            self._sync_adapter()
            return self._generate_batch(prepared, stop)

    def _generate_batch(self, prepared: list[Prepared], stop: Callable[[], bool] | None = None) -> list[AnswerResult]:
        started = time.perf_counter()
        generated = self.generate([p.conversation for p in prepared], [tuple(p.retrieved.hits) for p in prepared],
                                  stop, [p.retrieved.top_similarity for p in prepared], [p.decision for p in prepared])
        seconds = (time.perf_counter() - started) / len(generated)  # per answer, amortised
        return [self._finish(generation, p, seconds, self._adapter_version)
                for p, generation in zip(prepared, generated)]

    @property
    def tokenizer(self):
        """The loaded tokenizer (None before the first generation); read without the lock."""
        return self._decoder.tokenizer if self._decoder is not None else None

    def _finish(self, generation: Generation, prepared: Prepared, generation_s: float, version) -> AnswerResult:
        retrieved = prepared.retrieved
        if generation.complete:
            answer, dropped, guards = enforce_grounding(
                generation.answer, {p.short_id: p.text for p in retrieved.passages}, self.labels, prepared.given,
                {short_id for short_id, hit in retrieved.hits.items() if hit.tenant})
        else:  # the budget cut it: the honest answer, keeping the labels the cut answer had decided
            answer, dropped, guards = truncated_answer(generation.decided, self.labels), [], ["truncated_generation_replaced"]
        guards = [*generation.adjustments, *guards]
        if self.policy is not None:
            answer, rule = escalate_by_policy(self.policy, answer, prepared)
            if rule is not None:
                guards.append(f"{ESCALATED_BY_POLICY}_{rule}")
        tokens = generation.tokens
        answer = parse_answer(dump_answer(answer, self.labels), self.labels).model_dump()
        sources = [
            {"id": c, "chunk_id": retrieved.hits[c].chunk_id, "doc_id": retrieved.hits[c].doc_id,
             "section": retrieved.hits[c].section, "tenant": retrieved.hits[c].tenant}
            for c in answer["citations"]
        ]
        return AnswerResult(
            answer=answer,
            sources=sources,
            adapter_version=version,
            # the shared collection that answered (account chunks come from the customer's tenant)
            collection=next((h.collection for h in retrieved.hits.values() if not h.tenant),
                            knowledge_collection_name(self.settings.embedding_model)),
            retrieval_ms=retrieved.seconds * 1000,
            generation_ms=generation_s * 1000,
            generated_tokens=tokens,
            dropped_citations=dropped,
            guards=guards,
            decided=decisions_of(answer) if generation.complete else
            {**generation.decided, "escalation_level": answer["escalation"]["level"]},
            complete=generation.complete,
            prompt_tokens=generation.prompt_tokens,
            text=generation.text,
            decision_probabilities=generation.decision_probabilities,
            top_similarity=retrieved.top_similarity,
            retrieved=[{"id": i, "doc_id": h.doc_id, "chunk_id": h.chunk_id, "tenant": h.tenant,
                        "similarity": round(h.similarity, 4) if h.similarity is not None else None}
                       for i, h in retrieved.hits.items()],
        )


ESCALATED_BY_POLICY = "escalation_set_by_policy_rule"


def load_policy(settings: Settings, labels: LabelSpace) -> EscalationPolicy | None:
    """The company's escalation policy (``Settings.escalation_policy_file``), or None when there is none:
    the model's own level then stands (``schema.escalation_follows_decision``). A broken file fails
    loudly (``policy.PolicyError`` names the file, rule and field): routing silently by the model
    instead would hide it."""
    path = settings.escalation_policy_file
    return EscalationPolicy.from_file(path, labels) if path.is_file() else None


def escalate_by_policy(policy: EscalationPolicy, answer: dict, prepared: Prepared) -> tuple[dict, str | None]:
    """The answer with the level and reason the policy's first matching rule gives; the rule's id when
    that changed the model's level (None when the model's level stood)."""
    texts = {p.short_id: prepared.documents.get(p.short_id, p.text) for p in prepared.retrieved.passages}
    similar = [(hit.similarity, short_id) for short_id, hit in prepared.retrieved.hits.items()
               if hit.similarity is not None and short_id in texts]
    model_level = answer["escalation"]["level"]
    decided = policy.decide(Facts(
        ticket=prepared.customer_text,
        sentiment=answer["sentiment"], decision=answer["decision"], model_level=model_level,
        account=prepared.account, cited=[texts[c] for c in answer["citations"] if c in texts],
        retrieved=list(texts.values()), best_retrieved=texts[max(similar)[1]] if similar else None,
        as_of=prepared.as_of))
    if not decided.rule:
        return answer, None
    answer = {**answer, "escalation": {"level": decided.level, "reason": decided.reason[:200]}}
    return answer, (decided.rule if decided.level != model_level else None)


def load_labels(settings: Settings) -> LabelSpace:
    return LabelSpace.from_file(Path(settings.behaviour_dir) / "labels.json")
