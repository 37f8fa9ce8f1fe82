"""A test-only engine that sleeps, or crashes, in the stage a request names."""
