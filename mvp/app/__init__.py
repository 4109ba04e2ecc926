"""The application: app settings, the service façade over model, safety, assessment and store, the
Gradio UI and its named API endpoints, and the user-admin CLI. The only wing that imports gradio.
"""
