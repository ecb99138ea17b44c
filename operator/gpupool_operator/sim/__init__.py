"""``gpupool simulate``: replay request traces through scaling policies in a discrete-event model.

Pure like the core (no clock, no I/O, randomness only from seeded generators): traces are parsed
from text, the model keeps its own time, and every mix of replicas goes through the placement
engine. Modules: ``trace`` (CSV format and parser), ``generators`` (Poisson, diurnal, on/off),
``model`` (the replicas, queue, batching, pod start), ``results`` (the numbers of one run),
``scenario`` (a pool's model on a cluster), ``placement`` (mixes through the solver),
``policies`` (by name), ``baselines`` (HPA, KEDA, Knative KPA, AIBrix KPA, WVA, static),
``oracle`` (the clairvoyant schedule), ``runner`` (every policy over one trace).
"""
