"""FTL (Football Trade League): the rules of the game and the adapters around them."""
