"""Knowledge distillation: teachers (objects, ONNX files, model files), the loss written once over
TensorOps, and the objective the adapters' training loops minimise."""
