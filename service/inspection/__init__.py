"""Inside the network at inference time: activation statistics, heat maps (CAM, occlusion), evaluation.

Everything here runs on a separate inspection session per model version (`session.InspectionSession`),
never on the serving one. Imports serving, weights, protocol, ops, errors and settings.
"""
