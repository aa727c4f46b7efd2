"""Prediction at cluster scale (``lcbench predict``, ``lcbench calibrate``): cluster profiles with cited link
figures (:mod:`.cluster`), kernel rate tables from lcbench's measurements (:mod:`.rates`), the walk of a
strategy's declared schedule (:mod:`.model`), predicted records (:mod:`.predict`) and this machine's profile
from measurements (:mod:`.calibrate`). Built-in profiles and tables: ``clusters/``."""
