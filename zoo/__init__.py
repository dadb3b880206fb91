"""Model zoos: populations of small networks trained together, stored with their metrics in HDF5."""
from zoo.allocator import tune_allocator

tune_allocator()
