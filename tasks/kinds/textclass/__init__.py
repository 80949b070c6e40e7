"""Text classification (one label per text, or a label set): examples and their file formats (CSV/JSONL),
cleaning rules, the data contract's tables, the classifier, its metrics and predictions.

The TaskKind implementation is `tasks.kinds.textclass.kind.TextClass`, its training part
`tasks.kinds.textclass.training.TextClassTraining`; nothing here imports NER.
"""
