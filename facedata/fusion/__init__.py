"""Landmark schemes and the index maps that fuse corpora annotated with different schemes.

- `schemes`: the registry of point orders (names, groups, flip permutation, inter-ocular pair, sources);
- `maps`: the registry of index maps between schemes, as data (a source index, a mean of several, or none);
- `convert`: routes over the maps, their composition, and applying them with masks.

Importing this package registers nothing; the samplers import only `schemes`.
"""
