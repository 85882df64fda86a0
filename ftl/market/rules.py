"""Pure rules of the market (SPEC §1.3–1.4) on integers. No I/O: lua/lib/engine.lua mirrors it.

Units: prices and money in cents, lots in centilots (hundredths of a lot), `kMod` in micro-points
of price per lot, tolerances in parts per million. Every division rounds half away from zero,
except fills, which round against the trader (docs/decisions/0090).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ftl.core.money import to_cents

FORM_INDEX_MAX = Decimal(25)
BASE_PRICE_FLOOR = Decimal(50)
# One score point is worth (500 - 50) / 25 = 18 points of price.
POINTS_PER_SCORE_POINT = Decimal(18)

LONG = 1
SHORT = -1
PRICE_FLOOR_CENTS = 100  # price and fills never go below 1.00
LOTS_MIN_CENTIS = 1  # 0.01 lot
LOTS_MAX_CENTIS = 10_000  # 100.00 lots
MAX_OPEN_POSITIONS = 50
PPM = 1_000_000
SLIPPAGE_TOLERANCE_MAX_PPM = 50_000  # 0.05
SLIPPAGE_TOLERANCE_DEFAULT_PPM = 10_000  # 0.01
STOP_LOSS = "stop_loss"
TAKE_PROFIT = "take_profit"


def pre_match_base_price_cents(form_index: Decimal) -> int:
    """`basePrice = 50 + clamp(formIndex, 0, 25) × 18`, in cents."""
    form = min(max(form_index, Decimal(0)), FORM_INDEX_MAX)
    return to_cents(BASE_PRICE_FLOOR + form * POINTS_PER_SCORE_POINT)


def div_half_away(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded half away from zero, exactly."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return -quotient if numerator < 0 else quotient


def price_cents(live_base_cents: int, k_mod_micros: int, net_lots_centis: int) -> int:
    """`price = max(1.00, liveBasePrice + kMod × netLots)`, to the cent."""
    impact = div_half_away(k_mod_micros * net_lots_centis, PPM)
    return max(PRICE_FLOOR_CENTS, live_base_cents + impact)


def curve_average_cents(
    live_base_cents: int, k_mod_micros: int, from_lots: int, to_lots: int, round_up: bool
) -> int:
    """The average of the price curve `max(1.00, liveBasePrice + kMod × x)` as netLots `x` walks
    from `from_lots` to `to_lots` (centilots), exactly, then rounded up or down to the cent.

    Where the curve stays above 1.00 this is `liveBasePrice + kMod × (from + to) / 2`; the floor
    belongs to the curve, not to the average, so a trade that crosses 1.00 pays the floored part
    at 1.00 and the rest along the line, and no path of trades is cheaper than another
    (docs/decisions/0090). Requires `k_mod_micros ≥ 0`.
    """
    low, high = min(from_lots, to_lots), max(from_lots, to_lots)
    # h(x) = PPM × (curve above the floor at x), in micro-cents: linear, increasing in x.
    above_low = PPM * (live_base_cents - PRICE_FLOOR_CENTS) + k_mod_micros * low
    above_high = above_low + k_mod_micros * (high - low)
    if above_high <= 0:
        return PRICE_FLOOR_CENTS
    if above_low >= 0:
        numerator, denominator = above_low + above_high, 2 * PPM
    else:
        # NOTE: only the part from the crossing to `high` lies above the floor: a triangle.
        numerator, denominator = above_high * above_high, 2 * PPM * k_mod_micros * (high - low)
    quotient, remainder = divmod(numerator, denominator)
    return PRICE_FLOOR_CENTS + quotient + (1 if round_up and remainder else 0)


def fill_cents(
    live_base_cents: int, k_mod_micros: int, net_lots_centis: int, lots_centis: int, side: int
) -> int:
    """The fill of a trade that adds `side × lots` to netLots (buy +1: open long or close short;
    sell −1: open short or close long): the curve's average over the trade,
    `liveBasePrice + kMod × (netLots ± lotSize/2)`, floored at 1.00, rounded to the cent against
    the trader: up when he buys, down when he sells."""
    return curve_average_cents(
        live_base_cents,
        k_mod_micros,
        net_lots_centis,
        net_lots_centis + side * lots_centis,
        side > 0,
    )


def unwind_cents(
    live_base_cents: int, k_mod_micros: int, net_lots_centis: int, direction: int
) -> int:
    """The full-time close-out price of a position of `direction` (SPEC §1.7): the average fill of
    unwinding the whole net demand along the curve, `max(1.00, liveBasePrice + kMod × netLots /
    2)`, rounded against the trader: down for a long (he sells), up for a short (he buys)."""
    return curve_average_cents(live_base_cents, k_mod_micros, 0, net_lots_centis, direction < 0)


def level_price_after_open(
    live_base_cents: int, k_mod_micros: int, net_lots_centis: int, lots_centis: int, direction: int
) -> int:
    """The price levels set at open are checked against: the price of the open's own trade tick,
    so no level can sit inside the position's own impact (SPEC §1.4)."""
    return price_cents(live_base_cents, k_mod_micros, net_lots_centis + direction * lots_centis)


def margin_cents(fill: int, lots_centis: int) -> int:
    """`margin = fill × lotSize × 100 / 10` (leverage 1:10), to the cent."""
    return div_half_away(fill * lots_centis, 10)


def pnl_cents(entry: int, price: int, lots_centis: int, direction: int) -> int:
    """`(price − entry) × lotSize × 100 × direction`: exact in cents, no rounding needed."""
    return (price - entry) * lots_centis * direction


def slippage_exceeded(direction: int, fill: int, client_price: int, tolerance_ppm: int) -> bool:
    """Long: `fill > clientPrice × (1 + tol)` fails; short: `fill < clientPrice × (1 − tol)`."""
    if direction == LONG:
        return fill * PPM > client_price * (PPM + tolerance_ppm)
    return fill * PPM < client_price * (PPM - tolerance_ppm)


def invalid_level(
    direction: int, price: int, stop_loss: int | None, take_profit: int | None
) -> str | None:
    """The field that breaks `stopLoss < price < takeProfit` (long) or `takeProfit < price <
    stopLoss` (short), or None when the levels are acceptable."""
    if stop_loss is not None and (stop_loss - price) * direction >= 0:
        return "stopLoss"
    if take_profit is not None and (take_profit - price) * direction <= 0:
        return "takeProfit"
    return None


def stop_reached(
    direction: int, stop_loss: int | None, take_profit: int | None, price: int
) -> str | None:
    """Which level a tick at `price` reaches (at or beyond), or None."""
    if stop_loss is not None and (price - stop_loss) * direction <= 0:
        return STOP_LOSS
    if take_profit is not None and (price - take_profit) * direction >= 0:
        return TAKE_PROFIT
    return None


def margin_level_basis(equity: int, used_margin: int) -> int | None:
    """`equity / usedMargin × 100` in hundredths of a percent; None without open positions."""
    if used_margin <= 0:
        return None
    return div_half_away(equity * 10_000, used_margin)


@dataclass(frozen=True)
class Account:
    """A wallet at current prices, in cents."""

    balance: int
    used_margin: int
    unrealized_pnl: int

    @property
    def equity(self) -> int:
        return self.balance + self.unrealized_pnl

    @property
    def free_margin(self) -> int:
        return self.equity - self.used_margin

    @property
    def margin_level_basis(self) -> int | None:
        return margin_level_basis(self.equity, self.used_margin)
