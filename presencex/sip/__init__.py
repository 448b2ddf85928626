"""The sans-IO SIP core: parse, build, transactions. No sockets, no trio, no clock."""
