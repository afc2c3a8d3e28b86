"""A scripted platform client: plays audio into the proxy, records what comes back."""
