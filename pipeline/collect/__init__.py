"""Collect: posts of Instagram business accounts into the object store and the `raw` schema.

Two doors for the same data: live collection through instaloader (`instagram`), and folders that
instaloader already downloaded (`archive`). Both hand posts to `posts.store_post`.
"""
