"""Low precision: fp16 / bf16 with fp32 model I/O and fp32 fallback where half would overflow.

One pass, ``fp16`` (``fp16.py``; ``bf16=true`` for bfloat16), built from a plan and a
rewrite so that every decision is made, with its reason, before the graph changes.
Read in this order:

1. ``fp16.py`` — the pass: options, the order of the steps, the stats it reports;
2. ``tensor_types.py`` — element types of every tensor by scope (shape inference on a
   weight-stripped copy; local functions inferred per call-site types);
3. ``op_rules.py`` — per-op typing rules (inputs that must stay fp32, outputs with fixed types);
4. ``ranges.py`` — activation ranges and reductions' internal sums, measured on the fp32
   model with streamed calibration (``onnxopt.activations``);
5. ``plan.py`` — which nodes run in half and which stay fp32, and why;
6. ``rewrite.py`` — converts weights and attributes, inserts boundary Casts;
7. ``half_values.py`` — half tensors computed lazily from external fp32 data when written.

Verification of half models uses the framework's fp16-faithful judge
(``onnxopt.fp16_judge``), because onnxruntime on the CPU runs many fp16 ops in fp32 and
hides overflow.
"""
