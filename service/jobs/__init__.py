"""Jobs in Redis: the API side (store), the worker side (queue), their keys and Lua scripts, uploads."""
