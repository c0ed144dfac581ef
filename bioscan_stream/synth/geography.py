"""Collection sites of the synthetic release: countries, provinces and (lat, lon) points.

Part of `bioscan_stream.synth` (the synthetic release): `records.py` draws one site per record from the
table built here. Targets (paper appendix A2.1, Table A4): 47 countries, Costa Rica over 60% of the records,
about 100 provinces, 1,650 distinct (lat, lon) sites of which the top ~4% hold ~73% of the records,
province missing for ~1.8% of records. Province centres are real (rounded); sites scatter around them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COUNTRIES", "Sites", "build_sites"]

#: (country, share of records, ((province, lat, lon), ...)). Shares are relative weights (sum ~1).
COUNTRIES: tuple[tuple[str, float, tuple[tuple[str, float, float], ...]], ...] = (
    (
        "Costa Rica",
        0.620,
        (
            ("Guanacaste", 10.85, -85.45),
            ("Alajuela", 10.65, -84.60),
            ("Puntarenas", 8.95, -83.45),
            ("Limon", 10.00, -83.30),
            ("San Jose", 9.60, -83.90),
            ("Heredia", 10.40, -84.05),
            ("Cartago", 9.80, -83.65),
        ),
    ),
    (
        "Canada",
        0.110,
        (
            ("Ontario", 44.20, -79.40),
            ("Quebec", 46.80, -71.20),
            ("British Columbia", 49.30, -123.10),
            ("Alberta", 51.05, -114.07),
            ("Manitoba", 58.77, -94.16),
            ("Nunavut", 69.12, -105.06),
            ("Yukon Territory", 60.72, -135.05),
            ("Nova Scotia", 44.65, -63.58),
            ("Saskatchewan", 52.13, -106.67),
            ("New Brunswick", 45.96, -66.64),
        ),
    ),
    (
        "South Africa",
        0.052,
        (
            ("Western Cape", -33.92, 18.42),
            ("KwaZulu-Natal", -29.60, 30.38),
            ("Limpopo", -23.90, 29.45),
            ("Mpumalanga", -25.47, 30.98),
        ),
    ),
    ("Kenya", 0.032, (("Kakamega", 0.28, 34.75), ("Nairobi", -1.29, 36.82), ("Kwale", -4.17, 39.45))),
    ("Pakistan", 0.026, (("Punjab", 31.52, 74.35), ("Khyber Pakhtunkhwa", 34.01, 71.58), ("Sindh", 25.40, 68.36))),
    ("Thailand", 0.020, (("Chiang Mai", 18.79, 98.98), ("Nan", 18.78, 100.78), ("Phetchaburi", 12.96, 99.60))),
    ("Malaysia", 0.014, (("Sabah", 5.98, 116.07), ("Pahang", 3.81, 103.33))),
    ("Panama", 0.012, (("Colon", 9.36, -79.90), ("Chiriqui", 8.43, -82.43))),
    ("Saudi Arabia", 0.011, (("Asir", 18.22, 42.50), ("Riyadh", 24.71, 46.68))),
    ("Australia", 0.010, (("Queensland", -16.92, 145.77), ("New South Wales", -33.87, 151.21))),
    ("Ecuador", 0.009, (("Napo", -0.99, -77.81), ("Pichincha", -0.18, -78.47))),
    ("Finland", 0.008, (("Lapland", 68.42, 27.40), ("Uusimaa", 60.17, 24.94))),
    ("Germany", 0.007, (("Bavaria", 48.14, 11.58), ("Saxony", 51.05, 13.74))),
    ("Madagascar", 0.006, (("Toamasina", -18.15, 49.40), ("Fianarantsoa", -21.45, 47.09))),
    ("Papua New Guinea", 0.005, (("Madang", -5.22, 145.79),)),
    ("Bulgaria", 0.004, (("Blagoevgrad", 42.02, 23.09),)),
    ("Argentina", 0.004, (("Misiones", -27.36, -55.90), ("Tucuman", -26.81, -65.22))),
    ("Egypt", 0.003, (("Sinai", 28.54, 33.97),)),
    ("Honduras", 0.003, (("Atlantida", 15.77, -86.79),)),
    ("Chile", 0.003, (("Araucania", -38.74, -72.60),)),
    ("Brazil", 0.003, (("Amazonas", -3.12, -60.02), ("Minas Gerais", -19.92, -43.94))),
    ("United States", 0.003, (("California", 36.78, -119.42), ("Florida", 27.66, -81.52), ("Alaska", 64.20, -149.49))),
    ("Mexico", 0.002, (("Chiapas", 16.75, -93.12), ("Veracruz", 19.17, -96.13))),
    ("Guatemala", 0.002, (("Peten", 16.91, -89.89),)),
    ("Peru", 0.002, (("Madre de Dios", -12.59, -69.19),)),
    ("Colombia", 0.002, (("Antioquia", 6.25, -75.56),)),
    ("India", 0.002, (("Karnataka", 12.97, 77.59),)),
    ("China", 0.002, (("Yunnan", 25.04, 102.71),)),
    ("Japan", 0.001, (("Okinawa", 26.21, 127.68),)),
    ("Norway", 0.001, (("Finnmark", 70.07, 24.99),)),
    ("Sweden", 0.001, (("Norrbotten", 66.83, 20.40),)),
    ("Russia", 0.001, (("Primorsky Krai", 43.12, 131.89),)),
    ("Greenland", 0.001, (("Sermersooq", 64.18, -51.72),)),
    ("Tanzania", 0.001, (("Morogoro", -6.82, 37.66),)),
    ("Uganda", 0.001, (("Western", 0.67, 30.28),)),
    ("Mozambique", 0.001, (("Niassa", -13.30, 35.24),)),
    ("Namibia", 0.001, (("Khomas", -22.56, 17.08),)),
    ("Israel", 0.001, (("Northern District", 32.92, 35.29),)),
    ("Turkey", 0.001, (("Antalya", 36.90, 30.70),)),
    ("Iceland", 0.0005, (("Capital Region", 64.15, -21.94),)),
    ("Indonesia", 0.0005, (("Sulawesi Utara", 1.47, 124.84),)),
    ("Vietnam", 0.0005, (("Lao Cai", 22.34, 103.84),)),
    ("French Guiana", 0.0005, (("Cayenne", 4.92, -52.33),)),
    ("Belize", 0.0005, (("Cayo", 17.15, -89.07),)),
    ("Nicaragua", 0.0005, (("Rio San Juan", 11.13, -84.78),)),
    ("Cameroon", 0.0003, (("Centre", 3.87, 11.52),)),
    ("Greece", 0.0003, (("Crete", 35.24, 24.81),)),
)
#: Distinct sites of the full release (Table A4).
FULL_SITES = 1650
#: Share of records whose province is not given (Table A4).
MISSING_PROVINCE = 0.018


@dataclass(frozen=True)
class Sites:
    """One row per collection site; `weight` is its share of the records (sums to 1 per country)."""

    country: np.ndarray  #: country index into COUNTRIES
    province: list[str]
    lat: np.ndarray
    lon: np.ndarray
    weight: np.ndarray  #: within-country record share
    country_names: list[str]
    country_share: np.ndarray  #: record share per country


def build_sites(rng: np.random.Generator) -> Sites:
    """Scatter FULL_SITES sites over the province centres; site sizes are Zipf-like within each country.

    Sites per country grow with the square root of the country's share, so Costa Rica holds several hundred
    sites and small countries one or two, as on the paper's map (Figure 3).
    """
    share = np.array([c[1] for c in COUNTRIES])
    share = share / share.sum()
    per_country = np.maximum(1, np.round(np.sqrt(share) / np.sqrt(share).sum() * FULL_SITES)).astype(int)
    country, province, lat, lon, weight = [], [], [], [], []
    for index, (count, (_, _, provinces)) in enumerate(zip(per_country, COUNTRIES, strict=True)):
        which = rng.integers(len(provinces), size=count)
        centre = np.array([[p[1], p[2]] for p in provinces])[which]
        spread = rng.gamma(2.0, 0.15, size=(count, 1))
        point = np.round(centre + rng.normal(size=(count, 2)) * spread, 4)
        rank_weight = 1.0 / np.arange(1, count + 1) ** 1.3
        country += [index] * count
        province += [provinces[w][0] for w in which]
        lat.append(np.clip(point[:, 0], -89.9, 89.9))
        lon.append(np.clip(point[:, 1], -179.9, 179.9))
        weight.append(rng.permutation(rank_weight / rank_weight.sum()))
    return Sites(
        country=np.asarray(country),
        province=province,
        lat=np.concatenate(lat),
        lon=np.concatenate(lon),
        weight=np.concatenate(weight),
        country_names=[c[0] for c in COUNTRIES],
        country_share=share,
    )
