"""Paper steps 4-5 and 8: the depth-guided generator (backends), rendering a shot, its checks, assembly."""
