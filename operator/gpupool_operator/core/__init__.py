"""The pure decision core: plain data in, decisions out; no I/O, no clock, no randomness."""
