"""The SGLang backend: a client that decodes Multiverse through SGLang's native `/generate` (client.py), and the
server plugin that makes a stock SGLang 0.5.23 merge exactly (plugin/). The client imports no SGLang; the plugin
imports only SGLang and the core (`multiverse/`)."""
