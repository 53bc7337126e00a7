"""The node's inference engine: a supervised child process running llama.cpp."""
