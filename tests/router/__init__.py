"""Router tests: pure cores, then a real router on loopback with scripted nodes."""
