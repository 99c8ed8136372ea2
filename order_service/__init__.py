"""OrderService: the API servers. Places, queries and cancels market orders; stateless, any number of replicas."""
