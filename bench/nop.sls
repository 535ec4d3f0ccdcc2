# The baseline of bench/node_bench.py: a state run that does nothing (one test.nop),
# so that `state.apply gpu` on a converged node is measured against Salt's own cost.
bench-nop:
  test.nop: []
