"""心理咨询大模型 MVP: the runtime wings (model, safety, assessment, counsel, store, app); see docs/architecture.md."""
