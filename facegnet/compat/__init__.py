"""Drop-in layers for code written against other face libraries.

:mod:`facegnet.compat.face_recognition` gives face_recognition's seven functions over facegnet's MTCNN detector
and GhostNet embeddings; switching is one import line::

    import facegnet.compat.face_recognition as face_recognition

:mod:`facegnet.compat.face_recognition_cli` and :mod:`facegnet.compat.face_detection_cli` are its two commands,
installed as ``facegnet-face-recognition`` and ``facegnet-face-detection``. What differs is listed in
docs/migrating-from-face_recognition.md.
"""
