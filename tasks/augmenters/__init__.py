"""Label-preserving augmenters for NER records (pure cores; engines are loaded by their constructors)."""
