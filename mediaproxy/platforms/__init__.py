"""Platform adapters: one module per contact-center platform (sans-IO session + type hooks)."""
