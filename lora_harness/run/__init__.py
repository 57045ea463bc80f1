"""One evaluation run: the Harness (cases -> images -> judges -> store), score storage, sharding, progress."""
