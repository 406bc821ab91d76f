package gateway

import "strings"

// DefaultPrices returns list prices (USD per million tokens) for common
// model families, matched by name prefix. They are a convenience for cost
// budgets, not a billing source: operators with other models or contracts
// set Config.Prices.
func DefaultPrices() map[string]Price {
	return map[string]Price{
		"claude-opus-4-5":   {InputPerMTok: 5, OutputPerMTok: 25},
		"claude-opus-4-6":   {InputPerMTok: 5, OutputPerMTok: 25},
		"claude-opus-4-1":   {InputPerMTok: 15, OutputPerMTok: 75},
		"claude-opus-4-0":   {InputPerMTok: 15, OutputPerMTok: 75},
		"claude-opus-4-2":   {InputPerMTok: 15, OutputPerMTok: 75},
		"claude-opus":       {InputPerMTok: 5, OutputPerMTok: 25},
		"claude-sonnet":     {InputPerMTok: 3, OutputPerMTok: 15},
		"claude-3-7-sonnet": {InputPerMTok: 3, OutputPerMTok: 15},
		"claude-3-5-sonnet": {InputPerMTok: 3, OutputPerMTok: 15},
		"claude-haiku":      {InputPerMTok: 1, OutputPerMTok: 5},
		"claude-3-5-haiku":  {InputPerMTok: 0.8, OutputPerMTok: 4},
		"gpt-5":             {InputPerMTok: 1.25, OutputPerMTok: 10},
		"gpt-5-mini":        {InputPerMTok: 0.25, OutputPerMTok: 2},
		"gpt-5-nano":        {InputPerMTok: 0.05, OutputPerMTok: 0.4},
		"gpt-4.1":           {InputPerMTok: 2, OutputPerMTok: 8},
		"gpt-4.1-mini":      {InputPerMTok: 0.4, OutputPerMTok: 1.6},
		"gpt-4o":            {InputPerMTok: 2.5, OutputPerMTok: 10},
		"o3":                {InputPerMTok: 2, OutputPerMTok: 8},
		"o4-mini":           {InputPerMTok: 1.1, OutputPerMTok: 4.4},
	}
}

// priceOf returns the price of the longest prefix of model in prices.
func priceOf(prices map[string]Price, model string) (Price, bool) {
	best, found, bestLen := Price{}, false, -1
	for prefix, p := range prices {
		if strings.HasPrefix(model, prefix) && len(prefix) > bestLen {
			best, found, bestLen = p, true, len(prefix)
		}
	}
	return best, found
}

// cost prices one response's tokens.
func (g *Gateway) cost(t tokens) float64 {
	p, ok := priceOf(g.cfg.Prices, t.model)
	if !ok {
		return 0
	}
	cr, cw := p.CacheReadPerMTok, p.CacheWritePerMTok
	if cr == 0 {
		cr = 0.1 * p.InputPerMTok
	}
	if cw == 0 {
		cw = 1.25 * p.InputPerMTok
	}
	return (float64(t.input)*p.InputPerMTok + float64(t.output)*p.OutputPerMTok +
		float64(t.cacheRead)*cr + float64(t.cacheWrite)*cw) / 1e6
}
