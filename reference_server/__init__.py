"""The reference primer server: a small aiohttp server faithful to MegaMind's primer endpoint
(JSON-RPC 2.0 over HTTP, tool `mcp__megamind__search_environment_primer`), reading through the
primer-cache client, the seed's plan as written, or no cache. See docs/reference-server.md."""
