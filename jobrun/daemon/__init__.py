"""jobrund: jobrun's manager as a system service. `main` runs it (the `jobrund` command):
`dbus` serves jobrund's D-Bus API, `grpc` its remote one, `admission` decides for both who may
do what, `fairshare` bounds the D-Bus requests of each user, `schedules` makes and fires the
timers of schedules (`schedule_verbs`: their D-Bus methods).
"""
