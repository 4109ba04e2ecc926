"""The application: the one wing that imports gradio.

    config.py     AppConfig: settings from YAML and flags
    service/      the Service façade over model, safety, assessment and store (chat, feedback, admin, tasks)
    screening.py  guided PHQ-9 / GAD-7 screenings (part of the Service)
    ui/           the Gradio layout, its handlers, the named API endpoints, rendering
    auth.py       the login guard (throttling, lockout, hashing off the event loop)
    web.py        HTTP protections (origins, cookies, uploads, sessions that end)
    process.py    the app as a child process, for tests and benchmarks
    users.py      `python -m mvp.app.users`: account administration
"""
