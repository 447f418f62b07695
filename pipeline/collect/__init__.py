"""Collect: posts of Instagram business accounts into the object store and the `raw` schema.

Two doors for the same data: live collection through instaloader (`instagram`), and folders that
instaloader already downloaded (`archive`). Both store posts through `posts`: live collection one
at a time (`store_post`), the archive import in stages over many posts (`prepare_post`,
`upload_pictures`, `write_post`, the same three steps).
"""
