"""Fault-injection tests: a proxy breaks, stalls and answers for S3; a subprocess is SIGKILLed mid-COPY."""
