"""The Open Inference Protocol's wire format: request parsing, tensor decoding, response encoding,
datatypes and compression. Knows nothing of models or HTTP frameworks; imports only errors.
"""
