"""Patient contact: pre-call SMS with a pinned caller ID, the centre's vCard, local presence
by département, number import with French (ARCEP) range checks, and the CNAM registry.

One module per role: ``config`` (the ``[contact]`` section), ``templates`` and ``cnam`` (pure
rules), ``presence`` (pure: département of a number or a postal code), ``numbers`` (pure
import checks), ``sms`` (providers: HTTP adapters only), ``outbox`` (the SMS queue and its
sender), ``pins`` and ``service`` (announce), ``repo`` (the SQL of migration 0050),
``vcard`` and ``http`` (GET /vcard/<pool>.vcf). Nothing here logs a patient number or an SMS
body.
"""
