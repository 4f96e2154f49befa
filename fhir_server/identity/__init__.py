"""Patient identity: which identifier system an assigning authority's ids belong to, and merging
two Patient records of one person (``Patient/$merge``)."""
