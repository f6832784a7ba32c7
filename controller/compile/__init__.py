"""Pure compilers: intent + topology -> desired flows per switch."""
