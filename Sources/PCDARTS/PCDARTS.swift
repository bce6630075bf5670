// The PC-DARTS search layer: search space, super-net, architect, genotype, data and the search loop.
import TensorEngine
