"""Similar items and duplicate listings, from what the predict stage stores for each picture.

The predict pass writes each picture's embedding (the category champion's penultimate layer,
L2-normalised) and its perceptual hashes (`hashing`); `embeddings` keeps each model version's
HNSW index; `search` answers "more like this" for a catalogued picture or a new photo; and
`duplicates` groups the pictures that show the same product.
"""

# The network that tells article types apart gives the embeddings: the champion of this
# attribute (`marketplace.similar_products` names it too).
EMBEDDING_ATTRIBUTE = "category"
