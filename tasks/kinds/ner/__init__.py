"""Named-entity recognition (IOB2 token classification): records and their file formats, cleaning rules,
the data contract's tables, token alignment and tagging, seqeval scoring, error analysis and behaviour checks.

The TaskKind implementation is `tasks.kinds.ner.kind.NerKind`; nothing here imports text classification.
"""
