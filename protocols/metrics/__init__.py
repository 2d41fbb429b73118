"""Pure metric functions (numpy/torch in, numbers out), each tested against an independent
reference implementation and hand-computed golden values in tests/metrics/."""
