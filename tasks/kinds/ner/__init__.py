"""Named-entity recognition (IOB2 token classification): records and their file formats, cleaning rules,
the data contract's tables, token alignment and tagging, seqeval scoring, error analysis and behaviour checks.

The TaskKind implementation is `tasks.kinds.ner.kind.Ner`, its training part
`tasks.kinds.ner.training.NerTraining`; nothing here imports text classification.
"""
