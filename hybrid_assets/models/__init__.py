"""Model code shared by both paths and by serving: loading the base model (4-bit or float), the
schema grammar for constrained decoding, the repetition guard, and (below them) nothing of ours but
the contracts (schema, prompting, settings). Heavy libraries (torch, transformers, xgrammar) are
imported inside functions, so importing this package stays cheap."""
