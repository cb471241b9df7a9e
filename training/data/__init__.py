"""Synthetic speech corpus (text-to-speech) and on-the-fly augmentation.

Modules: ``text`` (sentences and normalisation), ``engines`` (TTS engines),
``corpus`` (the builder), ``manifest`` (reading a corpus), ``augment`` (noise,
reverberation, utterance mixing), ``cli`` (``wavstream corpus``).
"""
