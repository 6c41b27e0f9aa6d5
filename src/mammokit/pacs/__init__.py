"""mammokit beside a hospital archive: studies in over DICOMweb or DIMSE, results back as DICOM objects.

Modules, one job each:
- `access`: archive credentials (environment or an owner-only config file), TLS, the HTTP session.
- `dicomweb`: find (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS) with dicomweb-client.
- `results`: the prediction of one study as DICOM (highdicom): a TID 1500 Structured Report, a FRACTIONAL
  Segmentation and a Secondary Capture overlay per view, referencing the source UIDs.
- `node`: one study folder -> `mammokit predict` -> result objects on disk (what pull, listen and watch share).
- `dimse`: the C-STORE receiver (`pacs listen`) with its resumable spool, and the C-STORE sender.
- `watch`: follows a DICOMweb archive's new studies (Orthanc's change feed, or QIDO by date) with a state file.

Local logs and files name studies by salted hashes only; the objects sent back carry the real UIDs (they must).
"""
