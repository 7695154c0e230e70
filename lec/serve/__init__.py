"""The lec model server (challenge HTTP API) and the code that starts it as a process."""
