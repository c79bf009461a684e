"""The runtime face, audio and video library: decoding (``decode``), face detection and 68-point landmarks
(``landmarks``), the per-video face search that also finds small faces (``face_search``), face crops (``crop``),
per-video analysis (``extract``), audio features (``features``) and their per-frame windows (``windows``).

Data preparation (``talkingface.data.writer``), inference, evaluation and the synthetic set all use it; it imports
nothing from them (only the shared ``talkingface.constants``).
"""
