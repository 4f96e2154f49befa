"""CodeSystems, ValueSets, ConceptMaps and their operations (not built yet)."""
