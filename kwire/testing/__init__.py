"""kwire.testing: a real kwire broker (or a 3-broker cluster) inside a test suite.

Standard library only at import time: the pytest plugin (kwire.testing.plugin) is loaded in
every pytest run of an environment where kwire is installed.
"""
