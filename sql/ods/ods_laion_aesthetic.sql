-- ods_laion_aesthetic: one row per aesthetic row, from every aesthetic source of a subset.
-- source_rank is the source's position in the subset's configured priority list (0 first).
with source as (

    select * from src_laion_aesthetic

),

final as (

    select
        url,
        text,
        width,
        height,
        similarity,
        punsafe,
        pwatermark,
        aesthetic_score,
        source_hash,
        laion_hash(url, text) as hash,
        source_rank,
        source_name,
        file_name,
        subset
    from source

)

select * from final
