"""Byte streams on their way to and from storage: gzip (``gzip_stream``) and age encryption
(``age_stream``).
"""
