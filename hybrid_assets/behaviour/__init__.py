"""The behaviour path, without Dagster: behaviour data -> SFT examples -> QLoRA adapter -> registry.

- ``dataset``     load + validate tickets (jsonl) and intent CSVs, dedupe, hash split, data version
- ``sft``         chat-formatted, tokenised examples with loss on the assistant tokens only
- ``base_model``  resolve the base model (packaged GGUF -> cached HF folder), load it NF4 or plain
- ``train``       ``train_adapter``: a resumable LoRA/QLoRA training loop
- ``evaluate``    greedy generation on eval records, schema metrics, the promotion gate
- ``registry``    versioned adapters with lineage and an atomic ``current.json`` pointer

Facts live in retrieval, never in the weights: the adapter learns tone, the escalation decision
tree and the JSON shape. torch/transformers/peft are imported inside functions only.
"""
