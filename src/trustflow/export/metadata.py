"""Keys of an exported graph's metadata_props. A module of its own so the inference server
(and its container image) reads them without importing the exporters."""

METADATA_DATASET = "trustflow.dataset"
METADATA_TARGET = "trustflow.target"
METADATA_CLASSES = "trustflow.classes"  # JSON list: the label of output class 0, 1, ...
VALUE_OUTPUT = "value"  # the one output of a regressor's graph
