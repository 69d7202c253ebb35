"""Port slots and their states: the per-CPU `port_slots` array, the `ports` records, the leaving mark.

`leaving` (the CNI plugin's mark) imports neither numpy nor the rest of the data plane: keep this
package's `__init__` free of imports so that stays true.
"""
