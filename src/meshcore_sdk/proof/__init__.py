"""Proof of compute: keyed sampling, per-token records, receipts and the checks anyone can run on them.

The modules, imported one by one (this package imports none of them, so that the
node's engine child loads only what it uses, and ``meshcore_sdk`` itself never
needs numpy):

* :mod:`~meshcore_sdk.proof.sampler`: the keyed sampling rule and its Gumbel noise;
* :mod:`~meshcore_sdk.proof.records`: per-token records and their wire form;
* :mod:`~meshcore_sdk.proof.merkle`: the RFC 6962 tree over encoded records;
* :mod:`~meshcore_sdk.proof.digest`: the TOPLOC-style hidden-state digest;
* :mod:`~meshcore_sdk.proof.receipt`: signed receipts and node keys;
* :mod:`~meshcore_sdk.proof.consistency`: the router's free checks on every receipt;
* :mod:`~meshcore_sdk.proof.lottery`: the committed-secret audit lottery and its epochs;
* :mod:`~meshcore_sdk.proof.stats`: Clopper-Pearson bounds and Wald's SPRT;
* :mod:`~meshcore_sdk.proof.report`: what an audit measured (auditor to router).

All of it is pure: ``now``, secrets and ids come in as arguments.
"""

__all__: list[str] = []
